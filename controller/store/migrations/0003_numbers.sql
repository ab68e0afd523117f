-- Phone numbers (E.164) and where an inbound call to each goes: the route is the JSON of the
-- API's {"call": id} | {"user": id} | {"ivr": <tree>}.
CREATE TABLE numbers (
    number TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
