/*
 * Top-level key lines of the bootstrap file, for --print-config's provenance (config/layers.h). libyaml reads the
 * file; no value is interpreted here (the bootstrap loader does that, with its own errors).
 */
#include <stdio.h>
#include <string.h>
#include <yaml.h>
#include "config/layers.h"

void
rm_config_top_level_lines(const char *path, const char *const *keys, unsigned *lines)
{
    size_t nkeys = 0;
    while (keys[nkeys] != NULL)
        lines[nkeys++] = 0;
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return;
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) {
        fclose(fp);
        return;
    }
    yaml_parser_set_input_file(&parser, fp);
    if (yaml_parser_load(&parser, &doc)) {
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (root != NULL && root->type == YAML_MAPPING_NODE) {
            for (yaml_node_pair_t *pair = root->data.mapping.pairs.start; pair != root->data.mapping.pairs.top; ++pair) {
                yaml_node_t *k = yaml_document_get_node(&doc, pair->key);
                if (k == NULL || k->type != YAML_SCALAR_NODE)
                    continue;
                for (size_t i = 0; i != nkeys; ++i)
                    if (strcmp((const char *)k->data.scalar.value, keys[i]) == 0)
                        lines[i] = (unsigned)k->start_mark.line + 1;
            }
        }
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    fclose(fp);
}
