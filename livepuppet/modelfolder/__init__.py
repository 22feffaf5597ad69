"""The model folder: what ``convert`` writes and every engine reads (:mod:`.schema`), read with
bounds and checks (:mod:`.read`), and folders of livepuppet 0.1 migrated in memory (:mod:`.legacy`)."""
