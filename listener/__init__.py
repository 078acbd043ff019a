"""The DICOM listener: receive instances, spool them durably, assemble studies, detect completion.

Flow: ``scp`` accepts associations and hands each C-STORE to ``handlers``; handlers read
the grouping tags (``header``), write the bytes (``spool``), record the instance (``ingest``)
and tell ``assembly``, which asks the pure ``completion`` policy when a study is whole and
then ``routing`` and ``dispatch`` decide where it goes. This package never imports torch.
"""
