"""Thin adapters of the drop-in optimiser to training frameworks (optional extras):
:mod:`sabma.integrations.hf` (the Hugging Face ``Trainer``, ``pip install 'sabma[hf]'``) and
:mod:`sabma.integrations.lightning` (Lightning, ``pip install 'sabma[lightning]'``)."""
