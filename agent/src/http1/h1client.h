/*
 * Upstream HTTP/1.1 client: fills the RM_WIRE_HTTP1 row of the protocol table (upstream/cluster.h).
 */
#ifndef remora__h1client_h
#define remora__h1client_h

/** Registers the HTTP/1.1 client codec. Main thread, once, before workers start. */
void rm_h1client_register(void);

#endif
