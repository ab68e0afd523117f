"""SFU conferences: forward without decoding, last-N speaker choice, seamless stream rewriting."""
