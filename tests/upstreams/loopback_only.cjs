// Preload (`node --require tests/upstreams/loopback_only.cjs server.js`) that keeps a Node server on
// 127.0.0.1: it wraps net.Server.prototype.listen so that a listen(port[, callback]) or
// listen({port}) without a host binds loopback instead of every interface. For servers without a host
// setting, such as @modelcontextprotocol/server-everything's streamableHttp mode (docs: spec-notes §2).
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
const isPort = (value) => typeof value === 'number' || (typeof value === 'string' && /^\d+$/.test(value));

net.Server.prototype.listen = function listenOnLoopback(...args) {
  if (isPort(args[0]) && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, '127.0.0.1');
  } else if (args[0] && typeof args[0] === 'object' && 'port' in args[0] && !args[0].host && !args[0].path) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
