#include <string.h>
#include "remora/yamlutil.h"

unsigned
rm_yaml_line(const yaml_node_t *node)
{
    return node != NULL ? (unsigned)node->start_mark.line + 1 : 0;
}

int
rm_yaml_is_null(const yaml_node_t *node)
{
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *v = (const char *)node->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

const char *
rm_yaml_type_name(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    case YAML_SCALAR_NODE:
        return rm_yaml_is_null(node) ? "nothing" : "a scalar";
    default:
        return "nothing";
    }
}
