"""pacs-triage: the umbrella package holding the settings and the `triage` command line.

The services themselves live in the top-level packages ``listener``, ``worker``,
``training`` and ``db``; this package only ties them together for operators.
"""

TRIAGE_AID_DISCLAIMER = (
    "pacs-triage output is a triage aid to prioritise reading; it is not a diagnosis."
)
