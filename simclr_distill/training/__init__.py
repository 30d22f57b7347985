"""One training run, as every stage trains one: the run's network and data, the `Distiller`
model, the runtime it runs on, the executor that fits, scores and writes it, and the loop that
plans, claims and trains a stage's runs.

Modules, lowest first: `runtime` (strategies, writer checks, precision, optimizers),
`distiller` (the Keras model; the one place that touches Keras internals), `rundata` (a run's
train/val/test streams), `context` (what the runs of one command share), `networks` (the network
a run trains and the compiled model reused across runs), `executor` (`fit_run`, the resumable
fit every stage shares, and `execute_run`), `loop` (which runs train, claimed one at a time).
Beside them: `progress` (what the logs say of an epoch, a run and the study) and `summaries`
(each run's TensorBoard event files).
"""
