"""The PSTN call logic on top of the SIP stack: numbers and their routes, the B2BUA glue between
SIP dialogs and engine legs, outbound calls through the trunk, phone trees, and spam/robocall
screening with STIR/SHAKEN. See docs/pstn.md."""
