/*
 * bench_enc.h: the records of afcgi-bench's requests (FastCGI 1.0), built
 * into a bench_buf through fcgi.h. Every record gets request id 0: the
 * sender patches the real id into bytes 2 and 3 of each copy (§3.3).
 */
#ifndef AFCGI_BENCH_ENC_H
#define AFCGI_BENCH_ENC_H

#include <stddef.h>
#include <stdint.h>

#include "bench_buf.h"

/* Append one name-value pair (§3.4), not a record: a PARAMS stream's content. */
void bench_enc_nv(struct bench_buf *b, const char *name, const char *value);

/*
 * Append a name-value stream as PARAMS records, cut between pairs where
 * possible: php-fpm decodes each record on its own, like nginx sends them.
 * Only a pair larger than one record is split (§3.4 allows it). No records
 * when len is 0; the empty record that ends the stream is bench_enc_end's.
 */
void bench_enc_params(struct bench_buf *b, const uint8_t *p, size_t len);

/* Append the empty record that ends a stream of 'type' (§3.3). */
void bench_enc_end(struct bench_buf *b, unsigned type);

/* Append a request body of 'size' bytes of 'x' as STDIN records of at most
 * FCGI_MAX_CONTENT bytes, then the empty STDIN record. */
void bench_enc_stdin(struct bench_buf *b, size_t size);

/*
 * Replace the contents of t with a request's head: BEGIN_REQUEST (RESPONDER,
 * FCGI_KEEP_CONN if keep_conn, §5.1), the name-value stream nv[0..nvlen) as
 * PARAMS records, and the empty PARAMS record.
 */
void bench_enc_template(struct bench_buf *t, const uint8_t *nv, size_t nvlen, int keep_conn);

#endif
