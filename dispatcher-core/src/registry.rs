//! The registry: task name -> [`TaskDescriptor`].

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::task::{Task, TaskDescriptor};

/// Looks tasks up by name. [`TaskRegistry`] is the implementation; the trait lets a service
/// take any other source of descriptors.
pub trait Registry: Send + Sync + 'static {
    /// The task registered as `name`. Never guesses: an unknown name is `None`.
    fn lookup(&self, name: &str) -> Option<&'static TaskDescriptor>;
    /// All registered names, sorted.
    fn names(&self) -> Vec<&'static str>;
    /// Errors found while registering (e.g. a name used twice), reported at service start.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

#[doc(hidden)]
#[linkme::distributed_slice]
pub static COLLECTED_TASKS: [TaskDescriptor];

/// A registry filled explicitly, or with every `#[task]` linked into the binary.
///
/// ```
/// use dispatcher_core::{task, Registry, TaskRegistry};
///
/// #[task(name = "docs.add")]
/// fn add(a: i64, b: i64) -> i64 { a + b }
///
/// let registry = TaskRegistry::new().register::<add>();
/// assert!(registry.check().is_ok());
/// assert_eq!(registry.lookup("docs.add").map(|d| d.params()), Some(&["a", "b"][..]));
/// assert!(registry.lookup("docs.sub").is_none());
/// ```
#[derive(Debug, Default, Clone)]
pub struct TaskRegistry {
    tasks: HashMap<&'static str, &'static TaskDescriptor>,
    duplicates: Vec<&'static str>,
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        TaskRegistry::default()
    }

    /// Every `#[task]` in the binary (collected at link time with `linkme`).
    ///
    /// Two tasks with one name are an error naming it.
    pub fn collected() -> Result<Self> {
        let mut r = TaskRegistry::new();
        for descriptor in COLLECTED_TASKS {
            r.insert(descriptor);
        }
        r.check()?;
        Ok(r)
    }

    /// Adds task `T`. Adding a second, different task under a name already used is recorded and
    /// reported by [`Registry::check`] (which the service calls at start-up).
    pub fn register<T: Task>(mut self) -> Self {
        self.insert(T::descriptor());
        self
    }

    /// Adds a descriptor; like [`TaskRegistry::register`] but fails at once on a duplicate name.
    pub fn try_insert(&mut self, descriptor: &'static TaskDescriptor) -> Result<()> {
        if let Some(existing) = self.tasks.get(descriptor.name()) {
            if !std::ptr::eq(*existing, descriptor) {
                return Err(Error::DuplicateTask {
                    name: descriptor.name().to_owned(),
                });
            }
        }
        self.tasks.insert(descriptor.name(), descriptor);
        Ok(())
    }

    fn insert(&mut self, descriptor: &'static TaskDescriptor) {
        if self.try_insert(descriptor).is_err() {
            self.duplicates.push(descriptor.name());
        }
    }

    /// How many tasks are registered.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when no task is registered.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Registry for TaskRegistry {
    fn lookup(&self, name: &str) -> Option<&'static TaskDescriptor> {
        self.tasks.get(name).copied()
    }

    fn names(&self) -> Vec<&'static str> {
        let mut v: Vec<_> = self.tasks.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn check(&self) -> Result<()> {
        match self.duplicates.first() {
            Some(name) => Err(Error::DuplicateTask {
                name: (*name).to_owned(),
            }),
            None => Ok(()),
        }
    }
}
