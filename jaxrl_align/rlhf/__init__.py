"""RLHF on a small language model: the transformer, generation, GPT-2
weights, corpus and tokenizer, simulated annotators and the reward model.

Submodules are imported explicitly (``from jaxrl_align.rlhf import model``);
the corpus, tokenizer and annotator modules need the ``rlhf`` extra.
"""
