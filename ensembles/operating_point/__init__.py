"""Operating points: one point's schema and decision (point), the op.json file and its one
loader (op_json), the level of a finding (levels). Imports nothing, so no import circles."""
