/*
 * stats.h: the status page (--status-path): every worker's figures, merged,
 * as JSON (?full: every request in flight, with what it waits on) or as
 * Prometheus text (?prometheus).
 *
 * Where the figures live. The master maps a shared area before forking,
 * with a slot per worker. A worker's counters (struct metrics) are its
 * slot: it counts into shared memory as things happen, one writer per
 * slot, so whichever process answers reads every worker's counters as
 * they are now, without asking anybody and without a second of lag. The
 * master keeps in the same slots what only it knows: how often each worker
 * was started and how each one exited.
 *
 * What only a worker can say (its Lua memory per code generation, its
 * requests in flight and what each waits on) it writes into its slot when
 * asked: the answering worker takes a ticket from each other worker, pokes
 * it through its eventfd (all made by the master, inherited by every
 * worker) and parks the status request; each worker, in its own loop,
 * writes its snapshot under a sequence lock, marks the ticket answered and
 * pokes back whoever waits. The answer goes out once all have answered, or
 * after STATS_ASK_TIMEOUT with the silent ones marked so. No worker ever
 * blocks on another, and a busy one only delays its own part.
 */
#ifndef AFCGI_STATS_H
#define AFCGI_STATS_H

struct core;
struct req;
struct metrics;
struct stats_area;

/* Seconds a status answer waits for the other workers' snapshots. */
#define STATS_ASK_TIMEOUT 2.0

/* A shared area for 'nworkers' worker numbers and 'nslots' processes (in
 * the master, before forking; a worker being replaced and its replacement
 * run at once, each in its own slot); NULL on failure. */
struct stats_area *stats_create(int nworkers, int nslots);
void stats_destroy(struct stats_area *a);

/* The master: a process for worker number i + 1 was forked; one was
 * reaped with this wait status; the process in slot k is gone (its
 * counters are cleared: it is no longer up). */
void stats_worker_started(struct stats_area *a, int i);
void stats_worker_exited(struct stats_area *a, int i, int wstatus);
void stats_clear(struct stats_area *a, int k);

/* In the process of slot i, once its server is made: count into slot i from now on
 * (what was counted while loading is carried over), answer the others'
 * requests for snapshots, and count as up. */
void stats_attach(struct core *core, struct stats_area *a, int i);

/* Free what stats_attach made (at server_free, before the app's state
 * goes, which may take a while): from here on the process is not up and
 * answers no more, so nobody waits for its snapshot. */
void stats_detach(struct core *core);

/* How many slots; the counters of the process in slot i, or NULL while
 * it is not up. */
int stats_nslots(const struct stats_area *a);
const struct metrics *stats_worker(const struct stats_area *a, int i);

/* If r asks for --status-path, take it: answer it now or once the other
 * workers have answered, ending r either way, and return 1; else 0. */
int stats_answer(struct req *r);

#endif
