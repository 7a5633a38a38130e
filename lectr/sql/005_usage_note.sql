-- Why a row's usage is missing or incomplete; NULL when it is whole.
--   undecodable  the response's content-encoding could not be undone: no usage could be read
--   truncated    the body outgrew the capture and only its head and tail were kept; a measured
--                count covers what was kept, so it is a lower bound
--   not_counted  a stream without usage was not sent to the tokeniser (its queue was full or it
--                was away): recorded at once, without a count
ALTER TABLE request_logs ADD COLUMN usage_note text
    CHECK (usage_note IN ('undecodable', 'truncated', 'not_counted'));
