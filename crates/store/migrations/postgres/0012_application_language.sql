-- The language an application's hooks speak: 'jambonz' (JSON) or 'rcml' (RestComm XML).
ALTER TABLE applications ADD COLUMN language TEXT NOT NULL DEFAULT 'jambonz';
