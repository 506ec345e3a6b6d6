// A minimal Express app: its dependencies come from package-lock.json via `npm ci`.
const express = require('express');

const app = express();

app.get('/', (req, res) => {
  res.type('text/plain').send('Hello from Express!\n');
});

app.get('/health', (req, res) => {
  res.json({ status: 'ok' });
});

const port = process.env.PORT || 8080;
const server = app.listen(port, () => {
  console.log(`Listening on port ${port}`);
});

// On SIGTERM stop accepting connections, let in-flight requests finish, then exit 0.
process.on('SIGTERM', () => {
  console.log('SIGTERM received, shutting down');
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  // Do not wait forever on a busy keep-alive connection.
  setTimeout(() => process.exit(0), 10000).unref();
});
