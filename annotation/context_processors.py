from annotation.roles import can_explore, can_label, can_manage, role_names


def roles(request):
    user = request.user
    return {
        "can_manage": can_manage(user),
        "can_label": can_label(user),
        "can_explore": can_explore(user),
        "role_names": role_names(user),
    }
