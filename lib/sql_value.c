#include "sql_value.h"

/* One encoding of a value for every saved state that holds values (view
 * group keys, MIN/MAX/EARLIEST/LATEST/TOPK states): a type byte, then the
 * payload. */
void sql_value_save(cf_buf *out, sql_value v)
{
    cf_buf_put_u8(out, v.type);
    switch (v.type) {
    case SQL_NULL: break;
    case SQL_BOOLEAN: cf_buf_put_u8(out, v.u.b ? 1 : 0); break;
    case SQL_DOUBLE: cf_buf_put_f64(out, v.u.d); break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: cf_buf_put_i64(out, v.u.i); break;
    default: cf_buf_put_str(out, v.u.s, v.len); break;
    }
}

bool sql_value_load(cf_reader *in, size_t max_str, sql_value *ret)
{
    uint8_t t, b;
    sql_value v = sql_null();
    if (!cf_get_u8(in, &t))
        return false;
    v.type = t;
    switch (t) {
    case SQL_NULL: break;
    case SQL_BOOLEAN:
        if (!cf_get_u8(in, &b) || b > 1)
            return false;
        v.u.b = b;
        break;
    case SQL_DOUBLE:
        if (!cf_get_f64(in, &v.u.d))
            return false;
        break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP:
        if (!cf_get_i64(in, &v.u.i))
            return false;
        break;
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON: {
        const char *s;
        size_t n;
        if (!cf_get_str(in, &s, &n) || n > max_str)
            return false;
        v.u.s = s;
        v.len = (uint32_t)n;
        break;
    }
    default: return false;
    }
    *ret = v;
    return true;
}

const char *sql_type_name(sql_type t)
{
    switch (t) {
    case SQL_NULL: return "NULL";
    case SQL_BOOLEAN: return "BOOLEAN";
    case SQL_BIGINT: return "BIGINT";
    case SQL_DOUBLE: return "DOUBLE";
    case SQL_STRING: return "STRING";
    case SQL_TIMESTAMP: return "TIMESTAMP";
    case SQL_ARRAY: return "ARRAY";
    case SQL_JSON: return "JSON";
    }
    return "?";
}
