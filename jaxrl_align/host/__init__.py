"""The host side: the only floor that does I/O or prints.

:mod:`.runner` (any learner, chunked and vmapped over seeds, with progress,
metrics, checkpoints, exact resume and evaluation), :mod:`.settings` (how a
run is executed, and its device mesh), :mod:`.distributed` (one run over
several processes), :mod:`.files` (run directories and atomic writes),
:mod:`.checkpoints`, :mod:`.evaluation`, :mod:`.plotting`, :mod:`.demo`,
:mod:`.rlhf` (the RLHF run commands, the corpus, tokenizer, annotators and
GPT-2 loading) and :mod:`.cli` (the ``jaxrl-align`` command, entered
through :mod:`.launch`). Nothing below this package imports it.
"""
