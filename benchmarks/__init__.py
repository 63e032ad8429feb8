"""The benchmark suite: ForestFlow against the model servers people use (`make bench`)."""
