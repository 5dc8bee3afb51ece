//! Without `name`, a task is registered as `module::path::function`.

use dispatcher_core::{task, Task};

#[task]
fn tick() -> u64 {
    1
}

mod jobs {
    pub mod nightly {
        use dispatcher_core::task;

        #[task]
        pub fn cleanup(days: u32) -> u32 {
            days
        }

        /// A raw identifier is registered without its `r#`.
        #[task]
        pub fn r#loop() {}
    }
}

fn main() {
    assert_eq!(<tick as Task>::NAME, concat!(module_path!(), "::tick"));
    assert_eq!(tick::descriptor().name(), <tick as Task>::NAME);
    assert_eq!(
        <jobs::nightly::cleanup as Task>::NAME,
        concat!(module_path!(), "::jobs::nightly::cleanup")
    );
    assert!(<jobs::nightly::r#loop as Task>::NAME.ends_with("::jobs::nightly::loop"));
    assert_eq!(jobs::nightly::cleanup(7), 7);
}
