"""MCU conferences: decode the talkers, mix-minus, encode once per distinct mix."""
