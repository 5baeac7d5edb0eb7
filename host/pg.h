/*
** pg.h -- between pg.c (the connection) and pg_types.c (values both ways).
*/
#ifndef LOOM_PG_H
#define LOOM_PG_H

#include <libpq-fe.h>
#include <lua.h>

/* Lua values first..last -> parameter bytes. On failure, pushes an error
** object and returns -1 (nothing allocated). */
int pgp_params(lua_State *L, int first, int last, int n, char **pbuf,
               size_t **poff, int **plen, int **pfmt, Oid **ptype);
/* res -> rows, command tag, rows affected (3 values). May raise. */
int pgp_push_result(lua_State *L, const PGresult *res);
/* The error object of a failed result (kind pg, code SQLSTATE). */
void pgp_push_error(lua_State *L, const PGresult *res);
/* core.setup(null, encode, json_decode): the values Lua lends the C side. */
int pgp_setup(lua_State *L);

#endif
