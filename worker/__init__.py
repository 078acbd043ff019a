"""The inference worker: Celery tasks that turn a complete study into stored predictions.

Import-light on purpose: ``worker.celery_app`` imports only Celery, so the listener can
send tasks without pulling in torch.
"""
