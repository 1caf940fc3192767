"""The fair comparison (docs/study.md): every method tuned by the same seeded random search on
validation data drawn like train, selected by a rule declared before the runs, then trained on
fresh seeds and compared with confidence intervals.

sampling   trial hyperparameters from the registry's search spaces, reproducible from the search seed
trials     a trial as an ordinary variant of the grid (its block in params), and back
selection  the declared rule, over validation metrics only
stats      means, t confidence intervals, paired differences
"""
