//! What travels between the journal's types and PostgreSQL's: `?N`
//! placeholders as `$N`, parameters bound to the type the server inferred,
//! columns read by their type.

use std::error::Error as StdError;

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type};

use super::super::sql::{Param, Row, Value};
use super::super::JournalError;

/// `?N` placeholders as PostgreSQL's `$N`, outside quoted text.
pub(super) fn dollars(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

/// A parameter (owned: it travels with a statement sent without waiting),
/// bound to the type the server inferred for its placeholder.
#[derive(Debug, Clone)]
pub(super) struct PgParam(Value);

impl From<Param<'_>> for PgParam {
    fn from(p: Param<'_>) -> PgParam {
        PgParam(match p {
            Param::Null => Value::Null,
            Param::Int(n) => Value::Int(n),
            Param::Real(f) => Value::Real(f),
            Param::Text(s) => Value::Text(s.to_string()),
        })
    }
}

impl ToSql for PgParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::BOOL => (n != 0).to_sql(ty, out),
                Type::FLOAT8 => (n as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => n.to_string().to_sql(ty, out),
                _ => Err(format!("an integer cannot be bound to {ty}").into()),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                _ => Err(format!("a number cannot be bound to {ty}").into()),
            },
            Value::Text(ref s) => s.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

pub(super) fn read(r: &tokio_postgres::Row) -> Result<Row, JournalError> {
    let bad = |i: usize, e: tokio_postgres::Error| JournalError::Column(format!("column {i}: {e}"));
    let mut values = Vec::with_capacity(r.len());
    for (i, col) in r.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i).map(|v| v.map(Value::Int)),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(|n| Value::Int(n.into()))),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(|n| Value::Int(n.into()))),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)
                .map(|v| v.map(|b| Value::Int(b.into()))),
            Type::FLOAT8 => r.try_get::<_, Option<f64>>(i).map(|v| v.map(Value::Real)),
            Type::FLOAT4 => r
                .try_get::<_, Option<f32>>(i)
                .map(|v| v.map(|f| Value::Real(f.into()))),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => r
                .try_get::<_, Option<String>>(i)
                .map(|v| v.map(Value::Text)),
            ref other => {
                return Err(JournalError::Column(format!(
                    "column {i} has type {other}, which the journal does not use"
                )))
            }
        }
        .map_err(|e| bad(i, e))?;
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row::new(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_outside_quotes() {
        assert_eq!(
            dollars("SELECT a FROM t WHERE b = ?1 AND c = '?' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?' AND d = $12"
        );
    }
}
