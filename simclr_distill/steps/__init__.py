"""Each stage's orchestration, one module per stage: `stages/<name>.py` parses its flags and
calls `steps.<name>.run`. prepare -> pretrain -> finetune -> label -> distill (and baseline)
-> results / dashboard; `study` runs them in order. `zoo` is where stage 3's teachers come
from (a checked zoo manifest, or the demo zoo trained here), shared by label and distill.
"""
