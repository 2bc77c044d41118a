# Baseline selection scores of Table 1: IFD (Q2Q) from a rater model, sharded like rating, and an
# AlpaGasus-style judge. Rules are added by the baselines work.
