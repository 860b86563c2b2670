"""`make demo`: the built-in tiny bilingual model, trained end to end on CPU in a few minutes."""
