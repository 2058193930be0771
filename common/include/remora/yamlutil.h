/*
 * libyaml helpers shared by the parsers that report errors with file:line (the agent's bootstrap
 * file, the control plane's documents). Pure functions; any thread.
 */
#ifndef remora__yamlutil_h
#define remora__yamlutil_h

#include <yaml.h>

/** 1-based line of a node (0 for NULL). */
unsigned rm_yaml_line(const yaml_node_t *node);
/** 1 if the node is a plain scalar meaning null: empty, "~", "null", "Null" or "NULL". */
int rm_yaml_is_null(const yaml_node_t *node);
/** "a mapping", "a list", "a scalar" or "nothing", for messages such as "expected a list, got a scalar". */
const char *rm_yaml_type_name(const yaml_node_t *node);

#endif
