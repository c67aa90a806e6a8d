-- transaction.lua: play the MTA against markgate with OpenDKIM's miltertest and check what
-- markgate answers. Two complete messages on one connection, the way Postfix sends them:
-- negotiate (v6, everything offered), macros before each stage, connect, helo, then per
-- message mail, two rcpts, data, headers (one folded), eoh, two body chunks, eom, abort.
--
-- Run by tests/miltertest.rs:
--   miltertest -D SOCK=inet:PORT@127.0.0.1 -D MODE=pass|edit -s tests/miltertest/transaction.lua
--
-- MODE=pass: markgate's production filter must let both messages through untouched
--            (CONTINUE or ACCEPT at end-of-message, no header, subject or body change).
-- MODE=edit: the test handler must, for each message, add
--              X-Markgate-Test: seen QID from SENDER rcpts N headers H
--            (proving it saw that message's envelope and headers, not the previous one's),
--            change Subject to "[EDITED] " .. subject, and replace the body.
--
-- miltertest exits 1 without a word when the script raises an error, so everything runs under
-- pcall and failures are printed here. Its mt.negotiate() takes (version, steps, actions) in
-- that order in practice, whatever its manual says; every step function raises an error if the
-- milter opted out of that step, so each is gated on mt.test_option().

local sock = SOCK or "inet:8895@127.0.0.1"
local mode = MODE or "pass"

local function must(what, err)
  if err ~= nil then error(what .. ": " .. tostring(err), 0) end
end

local function reply_is(conn, what, ...)
  local got = mt.getreply(conn)
  for _, want in ipairs({ ... }) do
    if got == want then return end
  end
  error(string.format("%s: unexpected reply '%s'", what, string.char(got)), 0)
end

local function offered(conn, no_flag)
  return not mt.test_option(conn, no_flag)
end

-- Header values as the milter sent them: with HDR_LEADSPC negotiated the milter supplies the
-- space after the colon itself, so accept the value with or without it.
local function added(conn, name, value)
  return mt.eom_check(conn, MT_HDRADD, name, value)
      or mt.eom_check(conn, MT_HDRADD, name, " " .. value)
end

local function changed(conn, name, value)
  return mt.eom_check(conn, MT_HDRCHANGE, name, value)
      or mt.eom_check(conn, MT_HDRCHANGE, name, " " .. value)
end

local function message(conn, qid, sender, subject)
  local headers = {
    { "From", "Alice <" .. sender .. ">" },
    { "To", "bob@example.net, carol@example.com" },
    { "Subject", subject },
    { "X-Folded", "first line\n\tsecond line" },
  }

  must("macro M", mt.macro(conn, SMFIC_MAIL, "i", qid, "{mail_addr}", sender))
  if offered(conn, SMFIP_NOMAIL) then
    must("mailfrom", mt.mailfrom(conn, "<" .. sender .. ">", "SIZE=512", "BODY=8BITMIME"))
    reply_is(conn, "mailfrom", SMFIR_CONTINUE)
  end
  for _, rcpt in ipairs({ "bob@example.net", "carol@example.com" }) do
    must("macro R", mt.macro(conn, SMFIC_RCPT, "{rcpt_addr}", rcpt))
    if offered(conn, SMFIP_NORCPT) then
      must("rcptto " .. rcpt, mt.rcptto(conn, "<" .. rcpt .. ">"))
      reply_is(conn, "rcptto " .. rcpt, SMFIR_CONTINUE)
    end
  end
  if offered(conn, SMFIP_NODATA) then
    must("data", mt.data(conn))
    reply_is(conn, "data", SMFIR_CONTINUE)
  end
  if offered(conn, SMFIP_NOHDRS) then
    for _, h in ipairs(headers) do
      must("header " .. h[1], mt.header(conn, h[1], h[2]))
      if not mt.test_option(conn, SMFIP_NR_HDR) then
        reply_is(conn, "header " .. h[1], SMFIR_CONTINUE)
      end
    end
  end
  if offered(conn, SMFIP_NOEOH) then
    must("eoh", mt.eoh(conn))
    reply_is(conn, "eoh", SMFIR_CONTINUE)
  end
  if offered(conn, SMFIP_NOBODY) then
    for i, chunk in ipairs({ "Hello,\r\nfirst chunk of " .. qid .. ".\r\n", "second chunk.\r\n" }) do
      must("body chunk " .. i, mt.bodystring(conn, chunk))
      reply_is(conn, "body chunk " .. i, SMFIR_CONTINUE, SMFIR_SKIP)
    end
  end
  must("eom", mt.eom(conn))
  reply_is(conn, "eom", SMFIR_CONTINUE, SMFIR_ACCEPT)

  if mode == "pass" then
    -- The final reply was CONTINUE or ACCEPT, so no reply code was set. miltertest cannot ask
    -- MT_SMTPREPLY, MT_RCPTADD or MT_RCPTDELETE without an argument, so recipient removal is
    -- checked for the two real recipients.
    if mt.eom_check(conn, MT_HDRADD) or mt.eom_check(conn, MT_HDRCHANGE)
        or mt.eom_check(conn, MT_HDRDELETE) or mt.eom_check(conn, MT_HDRINSERT)
        or mt.eom_check(conn, MT_BODYCHANGE) or mt.eom_check(conn, MT_QUARANTINE)
        or mt.eom_check(conn, MT_RCPTDELETE, "<bob@example.net>")
        or mt.eom_check(conn, MT_RCPTDELETE, "<carol@example.com>") then
      error(qid .. ": the message was modified, expected it to pass untouched", 0)
    end
  elseif mode == "edit" then
    local seen = string.format("seen %s from <%s> rcpts 2 headers %d", qid, sender, #headers)
    if not added(conn, "X-Markgate-Test", seen) then
      error(string.format("%s: X-Markgate-Test '%s' not added (got '%s')", qid, seen,
        tostring(mt.getheader(conn, "X-Markgate-Test", 0))), 0)
    end
    if not changed(conn, "Subject", "[EDITED] " .. subject) then
      error(qid .. ": Subject not changed to '[EDITED] " .. subject .. "'", 0)
    end
    local body = "Replaced body for " .. qid .. ".\r\n"
    if not mt.eom_check(conn, MT_BODYCHANGE, body) then
      error(qid .. ": body not replaced with '" .. body .. "'", 0)
    end
  else
    error("unknown MODE " .. mode, 0)
  end
  -- Postfix ends every message with ABORT, even a delivered one; the milter must reset and
  -- keep the connection.
  must("abort", mt.abort(conn))
  mt.echo("ok " .. qid .. " (" .. mode .. ")")
end

local function main()
  local conn = mt.connect(sock, 40, 0.25)
  if conn == nil then error("cannot connect to " .. sock, 0) end
  -- What Postfix 3.x offers: version 6, every protocol step, every action.
  must("negotiate", mt.negotiate(conn, 6, 0x1fffff, 0x1ff))
  if mode == "edit" then
    for _, a in ipairs({ SMFIF_ADDHDRS, SMFIF_CHGHDRS, SMFIF_CHGBODY }) do
      if not mt.test_action(conn, a) then
        error(string.format("the milter did not ask for action 0x%x", a), 0)
      end
    end
  end

  must("macro C", mt.macro(conn, SMFIC_CONNECT, "j", "mx.example.org",
    "{daemon_name}", "mx.example.org", "_", "client.example.org [192.0.2.1]"))
  if offered(conn, SMFIP_NOCONNECT) then
    must("conninfo", mt.conninfo(conn, "client.example.org", "192.0.2.1"))
    reply_is(conn, "conninfo", SMFIR_CONTINUE)
  end
  must("macro H", mt.macro(conn, SMFIC_HELO, "{tls_version}", "TLSv1.3"))
  if offered(conn, SMFIP_NOHELO) then
    must("helo", mt.helo(conn, "client.example.org"))
    reply_is(conn, "helo", SMFIR_CONTINUE)
  end

  message(conn, "MTQID1", "alice@example.org", "first message")
  message(conn, "MTQID2", "dave@example.org", "second message, same connection")
  mt.disconnect(conn)
end

local ok, err = pcall(main)
if not ok then
  print("transaction.lua: FAIL: " .. tostring(err))
  os.exit(1)
end
print("transaction.lua: PASS (" .. mode .. ")")
