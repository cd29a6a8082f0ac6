"""Dynamic Power Sampling (issue 14): per-problem budgets chosen by a controller, offline part.

- vote.py: answers from k chains (majority over equivalent answers, ties by log p; best log p);
- log.py: a logged fixed-k_max run read back as chains with a state per checkpoint;
- features.py: what a controller sees at a checkpoint (per chain and per problem);
- controllers.py: fixed, agreement, beta, gbdt, mlp, oracle, in one registry;
- replay.py: each controller's decisions, accuracy and tokens on a log, vs fixed k_max;
- train.py: learning gbdt / mlp controllers from logs (skops files).

docs/dynamic.md explains the budget and the token accounting.
"""
