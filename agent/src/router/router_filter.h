/*
 * The two routing filters of every chain:
 *  - rm_route_filter (first): matches the request to a route of its listener (stream->route), or
 *    answers locally (no route, not configured yet);
 *  - rm_router_filter (last): sends the request upstream. It owns the stream's attempts, applies
 *    the route's timeouts, and commits the attempt whose response goes downstream.
 *
 * Thread: the stream's worker.
 */
#ifndef remora__router_filter_h
#define remora__router_filter_h

#include "proxy/filter.h"

extern const rm_filter_t rm_route_filter;
/**
 * Registers the route filter's worker module: in control-plane mode, requests that arrive before the
 * first snapshot wait for it on their worker (at most 10 s, then 503 / UNAVAILABLE "not configured
 * yet") and are routed with it when it comes. Main thread, once, before workers start.
 */
void rm_route_module_register(void);
extern const rm_filter_t rm_router_filter;

#endif
