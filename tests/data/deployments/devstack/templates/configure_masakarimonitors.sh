function configure_masakarimonitors {
    git_clone $MASAKARI_MONITORS_REPO $MASAKARI_MONITORS_DIR $MASAKARI_MONITORS_BRANCH

    # Create masakarimonitors conf dir if it doesn't exist
    sudo install -d -o $STACK_USER ${MASAKARI_MONITORS_CONF_DIR}
    setup_develop $MASAKARI_MONITORS_DIR

    # (Re)create masakarimonitors conf files
    rm -f $MASAKARI_MONITORS_CONF

    # (Re)create masakarimonitors api conf file if needed
    oslo-config-generator --namespace masakarimonitors.conf \
        --namespace oslo.log \
        --namespace oslo.middleware \
        > $MASAKARI_MONITORS_CONF

    iniset $MASAKARI_MONITORS_CONF api auth_url "$KEYSTONE_SERVICE_URI"
    iniset $MASAKARI_MONITORS_CONF api password "$SERVICE_PASSWORD"
    iniset $MASAKARI_MONITORS_CONF api project_name "$SERVICE_PROJECT_NAME"
    iniset $MASAKARI_MONITORS_CONF api username "$USERNAME"
    iniset $MASAKARI_MONITORS_CONF api user_domain_id "$SERVICE_DOMAIN_ID"
    iniset $MASAKARI_MONITORS_CONF api project_domain_id "$SERVICE_DOMAIN_ID"
    iniset $MASAKARI_MONITORS_CONF api region "$REGION_NAME"

    iniset $MASAKARI_MONITORS_CONF process process_list_path "$MASAKARI_MONITORS_CONF_DIR/process_list.yaml"
    touch $MASAKARI_MONITORS_CONF_DIR/process_list.yaml
}
