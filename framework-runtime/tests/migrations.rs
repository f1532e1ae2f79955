//! Migrations against a real Postgres: applied once and tracked, a broken one stops with its
//! file name and Postgres' message, an edited one is refused.

use ovation::sqldb::{DatabaseDef, Migration};
use ovation::tooling::SetupError;

static GOOD: [Migration; 1] = [Migration {
    version: 1,
    file: "1_create_things.up.sql",
    sql: "CREATE TABLE things (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);",
}];

static WITH_BROKEN: [Migration; 2] = [
    Migration {
        version: 1,
        file: "1_create_things.up.sql",
        sql: "CREATE TABLE things (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL);",
    },
    Migration {
        version: 2,
        file: "2_add_colour.up.sql",
        sql: "ALTER TABLE things ADD COLUMN colour TEXT; ALTER TABEL things ADD COLUMN size INT;",
    },
];

static EDITED: [Migration; 1] = [Migration {
    version: 1,
    file: "1_create_things.up.sql",
    sql: "CREATE TABLE things (id BIGSERIAL PRIMARY KEY, label TEXT NOT NULL);",
}];

fn def(migrations: &'static [Migration]) -> DatabaseDef {
    DatabaseDef {
        name: "things",
        module: "app::things",
        migrations,
        folder: None,
        from_folder: false,
    }
}

#[tokio::test]
async fn migrations_apply_once_fail_loudly_and_refuse_edits() {
    let server = ovation::testing::test_server().await.unwrap();
    let db = format!("ovt_{}_migrations_test", std::process::id());
    server.drop_database(&db).await.unwrap();
    server.create_database(&db).await.unwrap();
    // Creating it again is fine: databases are created only if missing.
    server.create_database(&db).await.unwrap();

    server.migrate(&db, &def(&GOOD)).await.unwrap();
    server.migrate(&db, &def(&GOOD)).await.unwrap();

    let err = server.migrate(&db, &def(&WITH_BROKEN)).await.unwrap_err();
    match &err {
        SetupError::Migration { file, message, .. } => {
            assert_eq!(file, "2_add_colour.up.sql");
            assert!(message.contains("syntax error"), "{message}");
        }
        other => panic!("expected a migration error, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with("migration 2_add_colour.up.sql of database `things` failed"),
        "{err}"
    );

    let pool = sqlx::PgPool::connect_with(server.options(&db))
        .await
        .unwrap();
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, file FROM _ovation_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(applied, [(1, "1_create_things.up.sql".to_owned())]);
    // The failed migration ran in a transaction: its first statement left nothing behind.
    let colour: Option<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'things' AND column_name = 'colour'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert_eq!(colour, None);
    pool.close().await;

    let err = server.migrate(&db, &def(&EDITED)).await.unwrap_err();
    assert!(
        matches!(err, SetupError::MigrationChanged { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("1_create_things.up.sql")
            && text.contains("was changed after it was applied"),
        "{text}"
    );

    server.drop_database(&db).await.unwrap();
}

#[tokio::test]
async fn template_clones_are_migrated_and_independent() {
    let server = ovation::testing::test_server().await.unwrap();
    let (a, b) = (
        format!("ovt_{}_clone_a", std::process::id()),
        format!("ovt_{}_clone_b", std::process::id()),
    );
    for db in [&a, &b] {
        server.drop_database(db).await.unwrap();
        server.clone_from_template(&def(&GOOD), db).await.unwrap();
    }
    let pa = sqlx::PgPool::connect_with(server.options(&a))
        .await
        .unwrap();
    let pb = sqlx::PgPool::connect_with(server.options(&b))
        .await
        .unwrap();
    sqlx::query("INSERT INTO things (name) VALUES ('only in a')")
        .execute(&pa)
        .await
        .unwrap();
    let in_b: i64 = sqlx::query_scalar("SELECT count(*) FROM things")
        .fetch_one(&pb)
        .await
        .unwrap();
    assert_eq!(in_b, 0);
    pa.close().await;
    pb.close().await;
    for db in [&a, &b] {
        server.drop_database(db).await.unwrap();
    }
}

// A migration file added after the build: cargo does not rebuild for it, and the app served
// on the old schema without a word. A debug build reads the folder, so it applies the file; a
// release build refuses to start (and every test's set-up fails), naming it.
#[tokio::test]
async fn a_migration_added_after_the_build_is_applied_in_debug_and_stops_a_release_build() {
    let folder = std::env::temp_dir().join(format!("ovation-unbuilt-{}", std::process::id()));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("1_create_things.up.sql"), GOOD[0].sql).unwrap();
    let folder_str: &'static str =
        Box::leak(folder.to_string_lossy().into_owned().into_boxed_str());
    let release = DatabaseDef {
        folder: Some(folder_str),
        ..def(&GOOD)
    };
    let server = ovation::testing::test_server().await.unwrap();
    let db = format!("ovt_{}_unbuilt_test", std::process::id());
    server.create_database(&db).await.unwrap();
    server.migrate(&db, &release).await.unwrap();

    std::fs::write(
        folder.join("2_add_colour.up.sql"),
        "ALTER TABLE things ADD colour TEXT;",
    )
    .unwrap();
    for err in [
        server.migrate(&db, &release).await.unwrap_err(),
        server.clone_from_template(&release, &db).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, SetupError::MigrationNotBuilt { file, .. } if file == "2_add_colour.up.sql"),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("not in this release build") && text.contains("touching"),
            "{text}"
        );
    }

    // The same build in debug: the folder as it is now, the new file included.
    let debug = DatabaseDef {
        name: "things_from_folder",
        from_folder: true,
        ..release
    };
    server.migrate(&db, &debug).await.unwrap();
    let pool = sqlx::PgPool::connect_with(server.options(&db))
        .await
        .unwrap();
    let colour: Option<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'things' AND column_name = 'colour'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert_eq!(colour.as_deref(), Some("colour"));
    pool.close().await;

    // A file the folder holds that is no migration's name is an error naming it, not skipped.
    std::fs::write(folder.join("3-oops.up.sql"), "SELECT 1;").unwrap();
    let bad = DatabaseDef {
        name: "things_misnamed",
        ..debug
    };
    let err = server.migrate(&db, &bad).await.unwrap_err().to_string();
    assert!(
        err.contains("3-oops.up.sql is not named `<number>_<name>.up.sql`"),
        "{err}"
    );
    server.drop_database(&db).await.unwrap();
    let _ = std::fs::remove_dir_all(&folder);
}
