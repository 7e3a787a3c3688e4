-- Which node made each attempt (for operators; and to show work spread over nodes).
ALTER TABLE attempts ADD COLUMN node TEXT;
