-- detail.lua with every answer's status counted (statuses.lua), for bench/cluster_scale.py.
dofile(os.getenv("WRK_DIR") .. "/detail.lua")
dofile(os.getenv("WRK_DIR") .. "/statuses.lua")
