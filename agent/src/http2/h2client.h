/*
 * Upstream HTTP/2 client: fills the RM_WIRE_H2 row of the protocol table (upstream/cluster.h).
 */
#ifndef remora__h2client_h
#define remora__h2client_h

/** Registers the HTTP/2 client codec. Main thread, once, before workers start. */
void rm_h2client_register(void);

#endif
