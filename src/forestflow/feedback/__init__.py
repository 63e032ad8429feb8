"""The feedback loop (SPEC §6): ground truth joined with logged predictions, scored per servable.

`records` parses a `POST …/feedback` body, `scoring` turns one prediction and its actual
value into samples, `rolling` keeps each servable's recent samples and `joiner` holds the
recent predictions (a `PredictionSink`) and joins feedback with them.
"""
