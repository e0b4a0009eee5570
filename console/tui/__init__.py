"""The Textual operator console (`voice-console`, `voice-console --demo`).

Importing this package does not import Textual; `console.tui.demo.run_tui` and
`console.tui.app` do.
"""
