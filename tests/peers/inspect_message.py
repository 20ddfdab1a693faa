"""Reads one message the way a receiving system would, with tools nobody here wrote.

    inspect_message.py MESSAGE_FILE [--dkim-txt TXT]

Parses the message with Python's email package (strict: any defect is reported) and, given the
DKIM selector's TXT record, verifies the signature with dkimpy, answering DNS queries with that
record. Prints one JSON object: the headers that matter, the text and HTML bodies, the parser's
defects and the DKIM verdict.
"""

import argparse
import email
import email.policy
import json

import dkim


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("message")
    parser.add_argument("--dkim-txt")
    args = parser.parse_args()
    raw = open(args.message, "rb").read()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    defects = [str(defect) for part in message.walk() for defect in part.defects]
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    result = {
        "from": str(message["From"]),
        "to": str(message["To"]),
        "subject": str(message["Subject"]),
        "message_id": str(message["Message-ID"]),
        "campaign": str(message["X-Campaign-ID"]),
        "list_unsubscribe": str(message["List-Unsubscribe"]),
        "list_unsubscribe_post": str(message["List-Unsubscribe-Post"]),
        "content_type": message.get_content_type(),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "defects": defects,
    }
    if args.dkim_txt is not None:
        record = args.dkim_txt.encode()
        result["dkim"] = dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
