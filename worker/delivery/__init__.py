"""Delivery of results: one sender module per channel, the outbox runner that drives them.

The documents are built by the inference worker (``worker.delivery.documents``) and the
rows queued with its prediction; from then on only the outbox (``db.outbox``) and the
runner (``worker.delivery.runner``) move a result toward its destinations.
"""
