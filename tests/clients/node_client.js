// Node https client (OpenSSL statically linked into /usr/bin/node): keep-alive requests on one
// connection, then a 1 MiB POST body. Usage: node node_client.js PORT UPLOAD_BYTES
const https = require('https');

const port = Number(process.argv[2]);
const upload = Number(process.argv[3]);
const agent = new https.Agent({ keepAlive: true, maxSockets: 1 });

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const headers = body ? { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length } : {};
    const req = https.request({ host: '127.0.0.1', port, method, path, agent, headers, rejectUnauthorized: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks)));
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

(async () => {
  for (const n of [100, 20000, 70000]) {
    const body = await request('GET', `/bytes/${n}`);
    if (body.length !== n) throw new Error(`got ${body.length} bytes, want ${n}`);
  }
  const receipt = await request('POST', '/upload', Buffer.alloc(upload, 'y'));
  console.log(receipt.toString().trim());
  agent.destroy();
})().catch((err) => { console.error(err); process.exit(1); });
