//! `#[ovation::model]`: serde, schema, `Debug` and `Clone` through `::ovation::`, JSON in
//! camelCase unless the type says otherwise, `FromRow` with `row`; and `{id}` paths.
use ovation::prelude::*;

#[ovation::model(row)]
pub struct Account {
    pub id: Uuid,
    pub display_name: String,
    pub r#type: String,
}

#[ovation::model]
#[derive(PartialEq, Eq)]
pub enum Plan {
    FreeTier,
    Paid { seats_bought: u32 },
}

#[ovation::model(without(Clone))]
#[serde(rename_all = "snake_case")]
pub struct Event {
    pub event_kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

// A derive the type writes itself is not added twice.
#[ovation::model]
#[derive(Default)]
pub struct Page(pub Vec<Account>);

#[ovation::api(public, method = "GET", path = "/accounts/{id}/files/{*rest}")]
pub async fn file(id: Uuid, rest: String) -> Result<Page, Error> {
    let _ = (id, rest);
    Ok(Page::default())
}

fn row<T: for<'r> ovation::sqlx::FromRow<'r, ovation::sqlx::postgres::PgRow>>() {}

fn main() {
    row::<Account>();
    let account = Account {
        id: Uuid::nil(),
        display_name: "Ada".into(),
        r#type: "admin".into(),
    };
    let json = serde_json::to_string(&account).unwrap();
    assert!(json.contains("\"displayName\":\"Ada\""), "{json}");
    assert!(json.contains("\"type\":\"admin\""), "{json}");
    let _copy = account.clone();
    let plan = serde_json::to_string(&Plan::Paid { seats_bought: 3 }).unwrap();
    assert_eq!(plan, r#"{"paid":{"seatsBought":3}}"#);
    let event = serde_json::to_string(&Event {
        event_kind: "x".into(),
        note: None,
    })
    .unwrap();
    assert_eq!(event, r#"{"event_kind":"x"}"#);
    let schema = ovation::schemars::schema_for!(Account);
    let properties = &schema.as_value()["properties"];
    assert!(properties.get("displayName").is_some(), "{properties}");
    println!("{account:?}");
}
