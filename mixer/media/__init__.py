"""Engine-side media services: what attaches to a conference without a network peer (players,
recordings) or sends to a destination of its own (forks), and the file formats they use (Ogg Opus,
WAV).

This layer sits below the conference modes (`mixer.mcu`, `mixer.sfu`): the modes call players for
their frames each tick and hand packets and the mix to the services attached to them
(`ConferenceMedia`), and the engine process creates and attaches them. Nothing here imports a
conference mode or the engine process.
"""
