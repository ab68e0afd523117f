"""The media engine process: conferences, legs, the 20 ms clock and the control API."""
