// The sample app from "Fundamentals of DevOps and Software Delivery":
// a plain node:http server that answers "Hello, World!".
const http = require('node:http');

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain' });
  res.end('Hello, World!\n');
});

const port = process.env.PORT || 8080;
server.listen(port, () => {
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
