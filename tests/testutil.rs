//! The test helpers' own checks (`src/testutil.rs`, which unit and integration tests share).

mod common;
use common::{noise, Rng, TempDir};
use std::os::unix::fs::PermissionsExt;

#[test]
fn the_generator_repeats_per_seed_and_keeps_its_sequence() {
    assert_eq!(noise(64, 1), noise(64, 1));
    assert_ne!(noise(64, 1), noise(64, 2));
    // Tests' fixed data depends on these exact numbers.
    assert_eq!(Rng::from_state(1).next_u64(), 1_082_269_761);
    assert_eq!(noise(4, 1), Rng::from_state(0x9e37_79b9_7f4a_7c15).bytes(4));
}

#[test]
fn a_temp_dir_with_read_only_directories_is_removed() {
    let d = TempDir::new("testutil");
    std::fs::create_dir_all(d.join("a/b")).unwrap();
    std::fs::write(d.join("a/b/f"), b"x").unwrap();
    std::fs::set_permissions(d.join("a"), std::fs::Permissions::from_mode(0o500)).unwrap();
    let p = d.path().to_path_buf();
    drop(d);
    assert!(!p.exists());
}
