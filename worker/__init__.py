"""The inference worker: Celery tasks that turn a complete study into stored predictions.

The listener never imports this package: the queue contract it shares with the worker
lives in :mod:`triage.queue`.
"""
