from vietnamese_ai.demo.run import main

raise SystemExit(main())
