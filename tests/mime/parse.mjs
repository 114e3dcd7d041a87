// Reads base64 messages (one a line) on stdin; prints, one JSON a line, what postal-mime
// makes of each: subject, from, to, cc, headers, text, attachments.
import PostalMime from "postal-mime";
import { createInterface } from "node:readline";

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line) continue;
  const email = await PostalMime.parse(Buffer.from(line, "base64"));
  const att = email.attachments.map((a) => ({
    filename: a.filename, mimeType: a.mimeType,
    content: Buffer.from(a.content).toString("base64"),
  }));
  process.stdout.write(JSON.stringify({
    subject: email.subject, from: email.from, to: email.to, cc: email.cc,
    headers: email.headers, text: email.text, attachments: att,
  }) + "\n");
}
