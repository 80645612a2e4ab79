// bench/lib/longpoll.js: the client side of bench/longpoll (Node, no packages).
//
//   node longpoll.js status HOST PORT PATH
//       one FastCGI GET of PATH straight to afcgi (not through a front);
//       prints the response body (afcgi's --status-path JSON)
//
//   node longpoll.js hold HOST PORT N [RATE]
//       opens N HTTP long-polls (GET /poll) to the front, each on a TCP
//       connection of its own (agent: false), RATE new ones per second
//       (default 2000) so that no front gets them all in one turn of its loop.
//       Prints "sent N" once all are written. A poll that ends before the
//       wake (error, non-200, timeout answer) is counted and opened again
//       (at most N times in all). On SIGUSR2: POST /wake through the same
//       front, time every poll's answer from just before that POST, print
//       "result {json}" once all N are answered (or after 120 s) and exit.
'use strict';
const http = require('http');
const net = require('net');

const [mode, host, portArg, arg4, arg5] = process.argv.slice(2);
const port = Number(portArg);

function fcgiStatus(path) {
    const rec = (type, body) => {
        const pad = (8 - (body.length % 8)) % 8;
        const h = Buffer.from([1, type, 0, 1, body.length >> 8, body.length & 255, pad, 0]);
        return Buffer.concat([h, body, Buffer.alloc(pad)]);
    };
    const pair = (n, v) => {
        const len = (x) => (x.length < 128 ? Buffer.from([x.length])
            : Buffer.from([0x80 | (x.length >> 24), (x.length >> 16) & 255, (x.length >> 8) & 255, x.length & 255]));
        const nb = Buffer.from(n), vb = Buffer.from(v);
        return Buffer.concat([len(nb), len(vb), nb, vb]);
    };
    const params = Buffer.concat([
        pair('REQUEST_METHOD', 'GET'), pair('REQUEST_URI', path), pair('DOCUMENT_URI', path),
        pair('SCRIPT_NAME', path), pair('QUERY_STRING', ''), pair('SERVER_PROTOCOL', 'HTTP/1.1'),
        pair('GATEWAY_INTERFACE', 'CGI/1.1'), pair('REMOTE_ADDR', '127.0.0.1')]);
    const sock = net.connect(port, host);
    sock.setTimeout(10000, () => { console.error('status: timeout'); process.exit(1); });
    sock.on('error', (e) => { console.error('status: ' + e.message); process.exit(1); });
    sock.on('connect', () => {
        sock.write(Buffer.concat([rec(1, Buffer.from([0, 1, 0, 0, 0, 0, 0, 0])), rec(4, params),
            rec(4, Buffer.alloc(0)), rec(5, Buffer.alloc(0))]));
    });
    let buf = Buffer.alloc(0), out = [];
    sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 8) {
            const type = buf[1], len = (buf[4] << 8) | buf[5], total = 8 + len + buf[6];
            if (buf.length < total) break;
            if (type === 6) out.push(buf.subarray(8, 8 + len));
            buf = buf.subarray(total);
            if (type === 3) {
                const s = Buffer.concat(out).toString();
                const i = s.indexOf('\r\n\r\n');
                process.stdout.write(i >= 0 ? s.slice(i + 4) : s);
                sock.destroy();
                return;
            }
        }
    });
}

function hold(n, rate) {
    const t = () => Number(process.hrtime.bigint()) / 1e6;   // ms
    let sent = 0, reopened = 0, wakeAt = null, wakeMs = -1, done = 0, bad = 0, early = 0, errors = 0;
    const reasons = {}, times = [];
    const note = (r) => { reasons[r] = (reasons[r] || 0) + 1; };

    function open() {
        let settled = false;
        const req = http.request({ host, port, path: '/poll?s=600', agent: false });
        const fail = (reason) => {
            if (settled) return;
            settled = true;
            note(reason);
            if (wakeAt === null) {
                early++;
                if (reopened < n) { reopened++; setTimeout(open, 100); }
            } else {
                bad++; finish();
            }
        };
        req.on('response', (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c) => { body += c; });
            res.on('end', () => {
                if (settled) return;
                if (res.statusCode !== 200 || body !== 'woken\n' || wakeAt === null)
                    return fail(wakeAt === null ? 'early ' + res.statusCode + ' ' + body.trim().slice(0, 40)
                        : 'status ' + res.statusCode + ' ' + body.trim().slice(0, 40));
                settled = true;
                times.push(t() - wakeAt);
                finish();
            });
            res.on('error', (e) => fail('response ' + e.code));
        });
        req.on('error', (e) => { errors++; fail('error ' + (e.code || e.message)); });
        req.end();
    }

    function finish() {
        done++;
        if (done === n && wakeMs >= 0) report();
    }

    let reported = false;
    function report() {
        if (reported) return;
        reported = true;
        times.sort((a, b) => a - b);
        const q = (p) => (times.length ? times[Math.min(times.length - 1, Math.ceil(p * times.length) - 1)] : -1);
        const r = {
            clients: n, answered: times.length, bad, early, errors, reopened,
            wake_ms: +wakeMs.toFixed(1), all_ms: times.length ? +times[times.length - 1].toFixed(1) : -1,
            p50_ms: +q(0.5).toFixed(1), p99_ms: +q(0.99).toFixed(1), reasons,
        };
        process.stdout.write('result ' + JSON.stringify(r) + '\n', () => process.exit(0));
    }

    // ramp: RATE/100 new polls every 10 ms
    const per = Math.max(1, Math.round(rate / 100));
    const timer = setInterval(() => {
        for (let i = 0; i < per && sent < n; i++, sent++) open();
        if (sent >= n) {
            clearInterval(timer);
            console.log('sent ' + n);
        }
    }, 10);

    process.on('SIGUSR2', () => {
        console.log('waking; early ' + early + ' errors ' + errors + ' ' + JSON.stringify(reasons));
        wakeAt = t();
        const w = http.request({ host, port, path: '/wake', method: 'POST', agent: false,
                                 headers: { 'Content-Length': 0 } }, (res) => {
            let body = '';
            res.on('data', (c) => { body += c; });
            res.on('end', () => {
                wakeMs = t() - wakeAt;
                console.log('wake answered ' + res.statusCode + ' ' + body.trim() + ' after ' +
                            wakeMs.toFixed(1) + ' ms');
                if (done === n) report();
            });
        });
        w.on('error', (e) => console.log('wake error ' + e.message));
        w.end();
        setTimeout(report, 120000);
    });
    process.on('SIGTERM', () => process.exit(0));
}

if (mode === 'status') fcgiStatus(arg4);
else if (mode === 'hold') hold(Number(arg4), Number(arg5 || 2000));
else { console.error('usage: longpoll.js status HOST PORT PATH | hold HOST PORT N [RATE]'); process.exit(2); }
