"""One short recipe per method: its config, its loss over a PackedBatch, and `run_<method>(config)`."""
