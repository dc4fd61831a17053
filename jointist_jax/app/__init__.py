"""``jointist-app``: the transcription and separation of one song in the browser (see :mod:`.cli`)."""
