"""The web app (``triage web``): the radiologist's worklist, the study API, the audit log and
metrics, behind tokens and browser sessions, every read of patient data written to the
access log.

Modules: :mod:`app` builds the application, :mod:`auth` decides who is asking,
:mod:`access_log` writes the one audit row per read, :mod:`security` adds the response
headers, ``routes_*`` hold the endpoints by resource, :mod:`metrics` the Prometheus
endpoint, :mod:`server` runs it under uvicorn. SQL lives in ``db`` as everywhere else.
"""
